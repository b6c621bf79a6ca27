"""UserError: the one base of every failure a user can fix.

A bad flag, input file, CSV row, record, model, photo or cloud setting raises a subclass whose
message says what is wrong and where; every command of the project catches this one class
and prints the message on one line with exit status 2 (launch: 1 for the cloud's refusals),
never a traceback. It lives beside absl_command, the other piece every command shares:
imports flow from the trainer and the launchers to the Beam job, never back.
"""


class UserError(Exception):
    """An expected failure; the message is the whole report."""
