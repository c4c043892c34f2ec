import helm_python
import pytest

from tests.deploy.chart import CHART_DIR


@pytest.fixture(scope="session")
def chart():
    """The tickpipe chart, loaded once through Helm's Go SDK."""
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded
