"""``vitune serve RUN_DIR``: a web page and a JSON API for a trained run, in one process.

``service`` (the run's scorer behind the micro-batcher, and the answer for one image),
``batching`` (:class:`MicroBatcher`), ``api`` (``/healthz``, ``/v1/predict``), ``page`` (the
Gradio page at ``/``), ``card`` (its model-card tab) and ``app`` (:func:`create_app`,
:func:`serve`). Importing this package sets ``GRADIO_ANALYTICS_ENABLED=False`` before Gradio
loads: the server never phones home.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
