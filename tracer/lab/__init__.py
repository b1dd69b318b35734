"""The lab: a real kernel in QEMU, its guest script and traffic."""
