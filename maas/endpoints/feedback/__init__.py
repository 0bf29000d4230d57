"""``/v1/feedback``: a label or a rating for an earlier classify or chat answer."""
