export { NotificationChannels } from './channels.js';
export { NotificationDispatcher } from './dispatcher.js';
export { emailOf, jobEndMessage, jobPageUrl } from './message.js';
export { NotificationService } from './rules.js';
export { postWebhook, type SendResult } from './webhook.js';
