"""MongoDB in the original system's layout (database ``annotations``): the only package that
talks to a MongoDB server. ``connection`` opens it, ``layout`` writes tasks, ``snapshot``
exports and imports mongoexport-compatible JSON lines."""
