"""The workflow's Lambda handlers: each parses its event, calls one function of fmbench or report."""
