"""Running a model: load any saved format as one probabilities function (`loading`), classify picture
files locally (`predict`) or on a server (`client`), and time it (`timing`)."""
