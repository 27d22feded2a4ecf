"""The small core every layer uses: the runner (the one door to the OS) and its journal, progress
display, paths, run records and the build cache."""
