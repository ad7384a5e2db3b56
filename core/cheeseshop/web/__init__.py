"""Web plumbing shared by the blueprints: error rendering, reason phrases, headers."""
