"""Reviewing: the Review button, the review modal, `/breakglass reviews`."""
