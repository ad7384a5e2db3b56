"""The legacy upload API (``POST /legacy/``): validate, store, record, commit, emit."""
