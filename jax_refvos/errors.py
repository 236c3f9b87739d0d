"""User-facing errors: bad input files, bad flags. The CLI prints them without a traceback."""


class InputError(Exception):
    """An expected problem with user input (a file, a flag, a dataset layout).

    The message names the offending file or item and the problem, e.g.
    ``data/x/mask_dict.json: anno_id 7, frame '00003': RLE size [10, 12] differs from the frame
    size [240, 320]``.
    ``refvos`` prints it as ``error: <message>`` and exits with status 2.
    """
