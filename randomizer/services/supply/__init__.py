"""Supply: the sealed stock of every site and the depot, the blind bound, and the policy.

Layers, each importing only those below it (nothing imports back up):

* ``bound`` — pure arithmetic: the guaranteed stock of each arm from masked facts.
* ``stock`` — each site's (and the depot's) locked stock row and sealed per-arm index,
  kept true by every kit move (kits, shipments and the kit lifecycle call it).
* ``policy`` — decisions a masked person can observe: the allocation gate, resupply
  shipments, alerts to the unblinded roles; above ``kits`` and ``shipments``.
* ``allocation`` — allocating and replacing a participant's kit through the gate.

The README's "How supply stays blind" states the rule and its proof.
"""
