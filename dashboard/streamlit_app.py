"""The script ``streamlit run`` executes (see ``dashboard.launch``)."""

from dashboard.app import main

main()
