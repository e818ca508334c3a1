package seaweed

// sysProcessVMReadv is process_vm_readv's system call number on linux/amd64 (the syscall
// package does not name it).
const sysProcessVMReadv = 310
