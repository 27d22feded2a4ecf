"""Phase 03, the kernel: sources, the Kconfig table applied with the kernel's own tools, the build,
its installation into a target and the boot that reads the configuration back."""
