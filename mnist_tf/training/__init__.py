"""Training in a run dir: set-up and compile (`setup`), the precision probe (`precision`), fit and resume
(`fit`, `resume`, `callbacks`), the run's lock and signals (`runlock`, `signals`), its record (`runinfo`)
and `tf.distribute` (`distribute`)."""
