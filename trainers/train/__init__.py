"""One trial's training: the trial process, trainer, data, threads, devices, teacher, inheritance, results."""
