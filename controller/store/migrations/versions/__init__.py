"""Schema revisions, oldest first by ``down_revision``. Written by ``make migration``,
then reviewed by hand."""
