"""pytest configuration shared by the unit tests and the notebook tests (nbval)."""

# Widget views carry a random model_id and HTML reprs embed ids; compare text/plain instead.
NBVAL_SKIP_COMPARE = (
    "application/vnd.jupyter.widget-view+json",
    "text/html",
    "application/javascript",
)


def pytest_collectstart(collector):
    if getattr(collector, "fspath", None) is not None and collector.fspath.ext == ".ipynb":
        collector.skip_compare += NBVAL_SKIP_COMPARE
