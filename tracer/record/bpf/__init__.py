"""The BPF modes (fentry, kprobe, tracepoint) through bcc: compile, attach, drain the ring."""
