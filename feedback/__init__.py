"""Feedback tagging: developers' comments → themes and polarity, corrected by people."""
