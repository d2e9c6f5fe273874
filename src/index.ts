/**
 * jupyter-persist's frontend: a notebook page reopened while its cells run shows the
 * outputs the server kept, and keeps updating them.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';

import { PersistIndicator } from './indicator';
import { NotebookFollower } from './notebook';
import { ReturningTab } from './returning';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-persist:follow',
  description: 'Shows a reopened notebook the outputs the server kept, and follows them.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker): void => {
    const followers = new WeakMap<object, NotebookFollower>();
    tracker.widgetAdded.connect((_, panel: NotebookPanel) => {
      // Views of one notebook ("New View for Notebook") share its context and model.
      let follower = followers.get(panel.context);
      if (!follower || follower.isDisposed) {
        const settings = app.serviceManager.serverSettings;
        follower = new NotebookFollower(panel.context, settings);
        followers.set(panel.context, follower);
        // Saves over the file the server wrote while the page was away, no dialog.
        new ReturningTab(panel.context, settings);
      }
      const item = new PersistIndicator(follower);
      // Beside the cell type selector: at the end, a narrow toolbar folds it away.
      if (!panel.toolbar.insertAfter('cellType', 'persistIndicator', item)) {
        panel.toolbar.addItem('persistIndicator', item);
      }
    });
  }
};

export default plugin;
