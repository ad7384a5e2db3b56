"""Changes to projects other than uploads: yank, unyank, status (PEP 592, PEP 792)."""
