"""The probe catalog (data) and the BPF C programs that implement the probes."""
