// Recurrent-state conventions shared by gated_delta_net.comp and conv1d.comp (R3, R4).
// The Python owner of these layouts is vkinfer/pipelines/gated_delta_net.py (ctl_words, planes).
//
// Control block (uint words, per step, in a bound device buffer `ctl` at word p.ctl_off):
//   ctl[ctl_off + 0]        n_tokens: tokens of each sequence in this step (<= rows dispatched)
//   ctl[ctl_off + 1 + s]    src_plane of sequence s: the plane its initial state is read from
// State planes: a state buffer holds 1 + n_snap planes of p.plane elements each.
//   plane 0        the live state
//   plane 1 + i    snapshot i = the state after token i of the step (written for i < n_snap)
// After a step the state after its last token is in plane n_tokens when n_tokens <= n_snap
// (plane 0 is then not written), otherwise in plane 0. commit(n_accepted) is therefore just
// "src_plane = n_accepted" for the next step; a step without snapshots continues from 0.
// Each invocation reads its state elements before it writes the same elements of any plane, so
// reading from and writing to the same plane in one step is safe. n_tokens == 0 writes nothing.

const uint CTL_N_TOKENS = 0u;   // word offsets inside a control block
const uint CTL_SRC_PLANE = 1u;  // + sequence index

float silu(float x) { return x / (1.0 + exp(-x)); }
