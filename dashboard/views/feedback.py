"""Feedback: what developers say, by theme and polarity, and tag corrections written back."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import cached, feedback_data
from dashboard.context import PageContext
from dashboard.views.widgets import pct, table
from feedback.errors import FeedbackInputError, UnknownFeedbackError, UnknownThemeError
from feedback.models import POLARITIES

DEFAULT_DAYS = 30
EDITOR_KEY = "tag_editor"
_FLASH = "feedback_flash"
ALL = "(all)"
# Praise green, complaints red, the rest grey: the colours a reader expects without a legend.
POLARITY_COLOURS = {"positive": "#2e7d32", "negative": "#c62828", "neutral": "#9e9e9e"}
COMMENTS_COLOUR = "#1f77b4"
REVIEW_CHOICES = {ALL: None, "needs review": True, "reviewed or confident": False}


def render(context: PageContext) -> None:
    """The feedback page."""
    url = context.database_url
    st.title("Feedback")
    listing = cached.experiments(url)
    keys = list(listing["experiment"]) if not listing.empty else []
    columns = st.columns([2, 2])
    experiment = columns[0].selectbox(
        "Experiment (for the split by arm)", [ALL, *keys], key="feedback_experiment"
    )
    days = columns[1].slider("Days", 1, 90, DEFAULT_DAYS, key="feedback_days")
    experiment_key = None if experiment == ALL else experiment
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(days=days)
    counts = cached.feedback_counts(url, experiment_key, start, end)
    overall = counts["overall"].iloc[0]
    kpis = st.columns(5)
    kpis[0].metric("Comments", f"{int(overall['comments']):,}")
    kpis[1].metric("Tagged", f"{int(overall['tagged']):,}")
    kpis[2].metric("Positive share", pct(overall["positive_share"]))
    kpis[3].metric("Negative share", pct(overall["negative_share"]))
    kpis[4].metric("Neutral", f"{int(overall['neutral']):,}")
    if int(overall["tagged"]) == 0 and int(overall["comments"]) > 0:
        st.info("No comment is tagged yet: the comments below are shown untagged.")

    st.subheader("Themes")
    themes = counts["themes"]
    if themes.empty:
        st.caption("No tagged comment in this range.")
    else:
        st.bar_chart(themes.set_index("theme"))
    table(themes, "feedback themes")
    if experiment_key is not None:
        st.subheader(f"By arm of {experiment_key}")
        table(counts["arm"], "feedback by arm")
    left, right = st.columns(2)
    with left:
        st.subheader("By language")
        table(counts["language"], "feedback by language")
    with right:
        st.subheader("Over time")
        by_day = counts["day"]
        if not by_day.empty:
            st.line_chart(
                by_day.set_index("day")[["comments", *POLARITY_COLOURS]],
                color=[COMMENTS_COLOUR, *POLARITY_COLOURS.values()],
            )
        table(by_day, "feedback by day")

    _comments(context, experiment_key)


def _comments(context: PageContext, experiment_key: str | None) -> None:
    url = context.database_url
    st.subheader("Comments")
    flash = st.session_state.pop(_FLASH, None)
    if flash:
        st.success(flash)
    themes = cached.themes(url)
    columns = st.columns([3, 2, 1, 1])
    query = columns[0].text_input("Search", key="feedback_search")
    theme_filter = columns[1].multiselect(
        "Themes", list(themes), format_func=lambda t: themes.get(t, t), key="feedback_themes"
    )
    polarity = columns[2].selectbox("Polarity", [ALL, *POLARITIES], key="feedback_polarity")
    languages = cached.filter_options(url).languages
    language = columns[3].selectbox("Language", [ALL, *languages], key="feedback_language")
    review_columns = st.columns([1, 2])
    review = review_columns[0].selectbox(
        "Review",
        list(REVIEW_CHOICES),
        key="feedback_review",
        help="Needs review: the tagger was unsure of a theme or of the polarity.",
    )
    max_confidence = review_columns[1].slider(
        "Confidence at most",
        0.0,
        1.0,
        1.0,
        0.05,
        key="feedback_confidence",
        help="The lower of the top theme's and the polarity's confidence; lower it to see the "
        "comments the tagger was least sure of.",
    )
    comments = cached.comments(
        url,
        query,
        tuple(theme_filter),
        None if polarity == ALL else polarity,
        None if language == ALL else language,
        experiment_key,
        REVIEW_CHOICES[review],
        None if max_confidence >= 1.0 else max_confidence,
    )
    st.caption(
        f"{len(comments)} comments (newest first). Edit themes and polarity, then save: "
        "corrections replace the model's tags and teach the tagger."
    )
    st.data_editor(
        comments,
        key=EDITOR_KEY,
        hide_index=True,
        width="stretch",
        num_rows="fixed",
        disabled=[c for c in comments.columns if c not in ("themes", "polarity")],
        column_config={
            "feedback_id": None,
            "themes": st.column_config.MultiselectColumn(
                "themes", options=list(themes), format_func=lambda t: themes.get(t, t)
            ),
            "polarity": st.column_config.SelectboxColumn("polarity", options=list(POLARITIES)),
            "polarity_confidence": st.column_config.NumberColumn(
                "polarity confidence", format="%.2f"
            ),
            "confidence": st.column_config.NumberColumn("confidence", format="%.2f"),
        },
    )
    st.download_button(
        "Download comments (CSV)",
        comments.to_csv(index=False).encode(),
        file_name="feedback_comments.csv",
        mime="text/csv",
        key="csv_comments",
    )
    if st.button("Save corrections", key="save_tags", type="primary"):
        _save(context, comments)


def corrections_from_edits(
    comments: pd.DataFrame, edited_rows: dict[Any, dict[str, Any]]
) -> list[feedback_data.TagCorrection]:
    """The corrections a table edit asks for: the row's themes and polarity after the edit."""
    corrections = []
    for position, change in sorted(edited_rows.items(), key=lambda item: int(item[0])):
        row = comments.iloc[int(position)]
        themes = change.get("themes", row["themes"])
        polarity = change.get("polarity", row["polarity"])
        corrections.append(
            feedback_data.TagCorrection(
                feedback_id=uuid.UUID(str(row["feedback_id"])),
                theme_ids=tuple(themes or ()),
                polarity=str(polarity) if polarity is not None else "",
            )
        )
    return corrections


def _save(context: PageContext, comments: pd.DataFrame) -> None:
    state = st.session_state.get(EDITOR_KEY) or {}
    corrections = corrections_from_edits(comments, state.get("edited_rows", {}))
    if not corrections:
        st.warning("Nothing to save: edit a comment's themes or polarity first.")
        return
    try:
        saved = feedback_data.save_corrections(
            cached.engine(context.database_url),
            corrections,
            corrected_by=f"dashboard:{context.identity.name}",
        )
    except (FeedbackInputError, UnknownThemeError, UnknownFeedbackError) as exc:
        st.error(f"Not saved: {exc}")
        return
    cached.clear()
    st.session_state.pop(EDITOR_KEY, None)
    st.session_state[_FLASH] = f"Saved {saved} correction(s)."
    st.rerun()
