"""The fleet simulator: synthetic developers using the assistant, with known true effects."""
