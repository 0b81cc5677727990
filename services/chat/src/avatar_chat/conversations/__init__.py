"""Stored conversations: message ids, and SillyTavern chat files to import and export."""
