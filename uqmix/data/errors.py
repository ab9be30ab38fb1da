"""Errors raised by the dataset loaders: one clear message per problem.

Both are ``ValueError`` subclasses, so callers that validate input with
``except ValueError`` catch them too.
"""


class DataFileError(ValueError):
    """A dataset file is missing, truncated or not in the format its authors publish.

    The message names the file, the problem and (once the registry has added
    it with ``with_help``) the expected folder layout and where to get the files.
    """

    def __init__(self, path, problem, help_text=""):
        self.path = str(path)
        self.problem = problem
        self.help_text = help_text
        message = f"{self.path}: {problem}"
        if help_text:
            message += f"\n{help_text}"
        super().__init__(message)

    def with_help(self, help_text):
        """The same error with the dataset's layout / download hint appended."""
        return DataFileError(self.path, self.problem, help_text)


class DataSourceError(ValueError):
    """No source could provide a dataset (no local copy, and tfds failed or lacks it)."""
