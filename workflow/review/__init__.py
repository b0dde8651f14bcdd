"""The review page: one static HTML page per dataset where a person checks the workflow's decisions.

``cards`` assembles the data (functions on tables), ``images`` makes the thumbnails and the match lines,
``render`` fills the page template (``template.html``, its script and style inline), ``page`` is the entry
point of rule ``review`` (rules/review.smk).
"""
