"""Test kit for Cheeseshop and its plugin authors."""
