"""UserError: the one base of every failure a user can fix.

A bad flag, input file, CSV row, record, model, photo or cloud setting raises a subclass whose
message says what is wrong and where; every command of the project catches this one class
and prints the message on one line with exit status 2 (launch: 1 for the cloud's refusals),
never a traceback. It lives beside absl_command, the other piece every command shares:
imports flow from the trainer and the launchers to the Beam job, never back.
"""


class UserError(Exception):
    """An expected failure; the message is the whole report."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (TensorFlow's and Google's carry a
    `message` and often a long trace after it), or the error's type when it has none: what a
    UserError quotes of the failure that caused it."""
    text = (getattr(error, "message", None) or str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__
