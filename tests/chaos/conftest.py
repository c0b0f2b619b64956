"""The end-to-end fixtures (a per-test operator process, Studies) serve this suite too."""

from tests.e2e.conftest import crds, operator, studies

__all__ = ["crds", "operator", "studies"]
