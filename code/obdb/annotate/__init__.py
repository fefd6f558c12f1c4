"""``auto_annotate``: model predictions and ground truth into CVAT without touching human work.

``function`` (the model as a cvat-sdk detection function, batched inference), ``candidates``
(missing-annotation filter), ``dedupe`` (reruns add nothing twice), ``review`` (review/score
attributes), ``shapes`` (named shapes → task ids), ``xml_tasks`` (full-fidelity CVAT XML),
``plan`` / ``push`` (what changes, and the safety rules when applying it), ``modes`` and
``uploads`` (the six modes). CVAT itself is reached only through :mod:`obdb.cvat`.
"""
