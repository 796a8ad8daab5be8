// A modal confirmation (native <dialog>): resolves true only when the user
// presses the confirm button. `input` adds a required text field whose value
// is returned instead of true.
import { h } from './dom.js';

export function confirmDialog({ title, message, confirm = 'Confirm', danger = false, input }) {
  return new Promise((resolve) => {
    const field = input
      ? h('input.dialog-input', { type: 'text', placeholder: input, 'aria-label': input })
      : null;
    const ok = h(`button.btn${danger ? '.danger' : '.primary'}`, { type: 'submit' }, confirm);
    const cancel = h('button.btn', { type: 'button' }, 'Cancel');
    const form = h(
      'form',
      { method: 'dialog' },
      h('h3', title),
      h('p', message),
      field,
      h('div.dialog-buttons', cancel, ok),
    );
    const dlg = h('dialog.confirm', { 'aria-label': title }, form);
    let result = false;
    form.addEventListener('submit', (e) => {
      if (field && !field.value.trim()) {
        e.preventDefault();
        field.focus();
        return;
      }
      result = field ? field.value.trim() : true;
    });
    cancel.addEventListener('click', () => dlg.close());
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve(result);
    });
    document.body.append(dlg);
    dlg.showModal();
    (field || ok).focus();
  });
}
