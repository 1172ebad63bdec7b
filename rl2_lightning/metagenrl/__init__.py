"""MetaGenRL (Kirsch, van Steenkiste & Schmidhuber, ICLR 2020) beside RL²: a learned objective L_α that
trains fresh, ordinary policies, meta-trained over several task families.

Data flow, in the order of the modules:

* :mod:`.objective`: the objectives an in-trial learner descends: the learned L_α (an LSTM reading the
  window backwards), REINFORCE with a baseline and advantage actor-critic;
* :mod:`.learner`: the in-trial learner (a fresh softmax policy and Monte-Carlo critic per trial,
  updated after every episode), the inner SGD step and the meta-loss;
* :mod:`.train`: meta-training over a split's training families (meta-gradient or ES), ``rl2-metagenrl``;
* :mod:`.store`: objective files, and the shipped ones that load by name;
* :mod:`.reference`: exact oracle and random returns of a task set;
* :mod:`.experiment`: the transfer experiment's rows on the held-out sets, its tables and figures.
"""
