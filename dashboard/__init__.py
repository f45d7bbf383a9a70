"""Streamlit dashboard for rollouts, metrics and tagged feedback."""
