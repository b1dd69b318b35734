"""What the running kernel offers: BTF, drivers, DWARF, symbols, the atlas."""
