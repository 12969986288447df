"""Policy: what the workflow file says about a request. Pure: functions of (workflow file,
request facts, now); no I/O.

- ``rules``: which rule of a workflow matches a request; typed confirmation, rollback
  plans, automation.
- ``windows``: change windows and freezes; when execution may start.
- ``evaluate``: the effective policy of a request or a submission (the applying rule
  merged in, its schedule, its ladder).
- ``execute``: ``may_execute``, the check made before a grant is issued.
- ``explain``: ``signoff policy explain``'s dry run, as text.
"""
