"""Commands about the project rather than a stage (`python -m pipeline <tool>`): bench, doctor,
params. No stage imports them, so editing one reruns nothing."""
