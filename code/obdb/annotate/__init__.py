"""``auto_annotate``: model predictions and ground truth into CVAT without touching human work.

``function`` (the model as a cvat-sdk detection function, batched inference), ``candidates``
(missing-annotation filter), ``xml_tasks`` (full-fidelity CVAT XML), ``modes`` and ``uploads``
(the six modes). Planning and writing shapes (safety rules, dedupe, review attributes, the plan
table) is :mod:`obdb.cvat`'s public write path, shared with ``obdb review --push``; CVAT itself
is reached only through :mod:`obdb.cvat`.
"""
