"""Pure logic about package names, filenames and archives: no I/O beyond reading a given
archive file."""
