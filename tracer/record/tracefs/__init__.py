"""tracefs mode: a private ftrace instance, read as text, with no BPF."""
