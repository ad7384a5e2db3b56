"""Web plumbing shared by the blueprints: error rendering, reason phrases, headers."""

#: Set on every response that does not set them itself (by app.py, and by the fast path).
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff"}
