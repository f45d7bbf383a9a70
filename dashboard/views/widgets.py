"""Small pieces every page uses: tables with a CSV download, percentages."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st


def table(
    frame: pd.DataFrame, name: str, *, style: Callable[[pd.DataFrame], Any] | None = None
) -> None:
    """Show ``frame`` (through ``style``, a pandas Styler, if given) with a button that downloads
    it as CSV."""
    st.dataframe(frame if style is None else style(frame), hide_index=True, width="stretch")
    st.download_button(
        f"Download {name} (CSV)",
        frame.to_csv(index=False).encode(),
        file_name=f"{name.replace(' ', '_')}.csv",
        mime="text/csv",
        key=f"csv_{name}",
        icon=":material/download:",
    )


def pct(value: float | None, digits: int = 1) -> str:
    """``0.4312`` as ``43.1%``; a dash for no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.{digits}f}%"


def ms(value: float | None) -> str:
    """Milliseconds, or a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.0f} ms"
