module github.com/swucx/swucx/go

go 1.22
