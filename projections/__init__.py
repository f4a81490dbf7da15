"""Read models built from the notification logs, their runner and operations.

Where things are (``docs/adr/0001-projection-runner.md`` says why we run our own runner
rather than eventsourcing's ``ProjectionRunner``):

- ``read_model``: ``ReadModelProjection``, what a read model implements (``apply`` an
  event; optionally ``fold_page``, a page at a time);
- ``shelf``, ``inbox/``, ``rooms``: the read models and their queries; ``registry`` lists
  them and the logs they follow;
- ``runner``: ``ReadModelRunner``, which writes a projection's pages exactly once (one
  transaction a page with its tracking position), stops on a poison event, and stands by
  behind an advisory lock while another process runs the projection;
- how it reads and writes: ``source`` (a log, read a page at a time), ``records`` (fast
  decoding), ``readahead`` (the next page read while one is written), ``batch`` (set-wise
  writes of a folded page);
- ``versions`` (blue/green versions in schemas), ``board`` (waiting until a read model
  includes a command's events), ``ops`` (status, rebuild, skip, retry), ``replay`` (read
  models as of a past moment, for analysts).
"""
