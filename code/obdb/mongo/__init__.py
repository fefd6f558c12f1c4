"""MongoDB in the original system's layout (database ``annotations``): the only package that
imports pymongo. ``connection`` opens a database (credentials, retries, indexes), ``layout`` reads
and writes tasks (one aggregation per task read; atomic replace), ``read`` is the ``mongo``
source's read path, ``sync`` copies CVAT tasks in (``obdb sync``), ``snapshot`` exports and
imports mongoexport-compatible JSON (``obdb db``), ``results`` stores per-box evaluation results."""
