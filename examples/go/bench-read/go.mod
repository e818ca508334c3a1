module github.com/swucx/swucx/examples/go/bench-read

go 1.22

require github.com/swucx/swucx/go v0.0.0

replace github.com/swucx/swucx/go => ../../../go
