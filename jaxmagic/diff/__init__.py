"""Comparing two profile reports (``jaxmagic.compare``, ``%jaxdiff``): no IPython here."""

from jaxmagic.diff.compare import ComparisonReport, FunctionChange, ReportVersionError, compare, load_report

__all__ = ["ComparisonReport", "FunctionChange", "ReportVersionError", "compare", "load_report"]
