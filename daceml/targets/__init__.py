"""Code-generation targets: settings and environments per device (cpu, cuda)."""
