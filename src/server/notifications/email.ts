/**
 * Sending email through the configured SMTP server with nodemailer: one transport for the server's life,
 * TLS as `server.notifications.smtp` says (SMTPS, required or opportunistic STARTTLS, or none), and a
 * time limit on every phase.
 */
import nodemailer, { type Transporter } from 'nodemailer';
import type { CompiledSmtpConfig } from '../../config/index.js';
import type { NotificationMessage } from '../../protocol/index.js';
import { emailOf } from './message.js';
import type { SendResult } from './webhook.js';

export class Mailer {
  private readonly transport: Transporter;

  constructor(private readonly smtp: CompiledSmtpConfig) {
    this.transport = nodemailer.createTransport({
      host: smtp.host,
      port: smtp.port,
      secure: smtp.secure,
      requireTLS: !smtp.secure && smtp.starttls === 'required',
      ignoreTLS: !smtp.secure && smtp.starttls === 'never',
      ...(smtp.auth ? { auth: { user: smtp.auth.user, pass: smtp.auth.password } } : {}),
      ...(smtp.ca ? { tls: { ca: smtp.ca } } : {}),
      connectionTimeout: smtp.timeoutMs,
      greetingTimeout: smtp.timeoutMs,
      socketTimeout: smtp.timeoutMs,
    });
  }

  async send(to: string, message: NotificationMessage): Promise<SendResult> {
    const { subject, text } = emailOf(message);
    try {
      await this.transport.sendMail({
        from: this.smtp.from,
        to,
        subject,
        text,
        headers: { 'X-Steward-Delivery': message.deliveryId },
      });
      return { ok: true };
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      return { ok: false, error: `SMTP: ${text.replace(/\s+/g, ' ').slice(0, 300)}` };
    }
  }

  close(): void {
    this.transport.close();
  }
}
