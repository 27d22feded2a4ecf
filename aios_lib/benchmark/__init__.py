"""Phases 05 and 07: what the benchmark measures and how it decides: its inputs (the verified
builds, the models), its experiments (thread sweep, flags, builds, quantisations), memory bandwidth
and the roofline, the served latency, the report and the comparison of two records."""
