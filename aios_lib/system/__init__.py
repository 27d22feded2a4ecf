"""Phase 02, the base system: disk layout, partitions and file systems, bootstrap, the root's
configuration, the boot loader and command line, the disk image, and QEMU boots that check it."""
