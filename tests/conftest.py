"""Shared test configuration: Hypothesis profiles.

``dev`` (the default) keeps Hypothesis' randomized search; ``ci`` is
derandomized, has no deadline (CI machines are shared and slow) and prints the
blob that reproduces a failure. ``HYPOTHESIS_PROFILE`` picks one explicitly;
otherwise ``ci`` is used when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev")
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
